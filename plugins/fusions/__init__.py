"""Built-in fusion plugins."""
