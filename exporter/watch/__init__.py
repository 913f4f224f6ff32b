"""What changes between polls: the runbook's emergencies and the watch after a deploy."""
