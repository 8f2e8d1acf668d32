"""Use cases. Each takes its dependencies (Firestore client, clock) as parameters."""
