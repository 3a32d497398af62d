// Noticed (issue 17): a desktop notification (opt-in per user) and an optional sound for a
// critical escalation or a halt while the tab is in the background.
