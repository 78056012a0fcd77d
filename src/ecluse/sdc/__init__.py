"""Statistical disclosure control on research outputs."""
