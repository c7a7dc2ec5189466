"""Evidence on disk: atomic writing of a rehearsal's output directory."""
