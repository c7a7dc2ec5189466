"""The rehearsal flow (clone -> legs -> invariants -> result), the report it produces, re-running
a packet's rehearsal, and the demo."""
