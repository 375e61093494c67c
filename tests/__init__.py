"""coral_hf's test suite (a package, so that helpers are imported as `tests.testing_utils`)."""
