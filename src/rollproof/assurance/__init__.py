"""rollproof checking itself: the validator's self-test over built-in good and bad packets."""
