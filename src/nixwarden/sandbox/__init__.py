"""bubblewrap argument building, shared by tenant stores and confine."""
