"""Realms (DESIGN.md section 8, CONCEPTS 44-50): this console's identity, the peers it pairs
with, the grants between them, and the A2A wire over which a loop calls another realm's."""
