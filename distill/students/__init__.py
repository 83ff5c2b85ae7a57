"""Students that learn from the teacher's soft labels."""
