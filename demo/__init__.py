"""The demo domains: Healthcare, Education and Industrial loop stacks running continuously on
generated data (DESIGN.md section 7). Nothing imports this package but the settings."""
