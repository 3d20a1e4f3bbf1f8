"""Helpers every stage may use; they import nothing else of finn_demo."""
