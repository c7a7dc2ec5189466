"""Declared, observed and forbidden surfaces, dialect-free: what a change's SQL touches (asked
of its engine's reader), whether the change declared it, which forbidden objects, files and
environment variables it came near, and the destructive-change lint."""
