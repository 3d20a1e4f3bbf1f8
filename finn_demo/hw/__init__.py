"""FINN's hardware flow (needs FINN installed): builder, boards, fit, resources, checks, build."""
