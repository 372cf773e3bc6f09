"""What several test modules share: one place, imported by name (tests/helpers/*)."""
