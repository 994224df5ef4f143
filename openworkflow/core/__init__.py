"""Pure rules of the engine: records, decisions and formats, with no I/O."""
