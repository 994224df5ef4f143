"""Interoperability tests against the TypeScript ``openworkflow`` npm package."""
