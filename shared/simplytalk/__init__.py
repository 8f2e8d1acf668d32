"""SimplyTalk's backend library: what every Cloud Function shares.

Import cost matters (every deployed function imports `functions/main.py` on a
cold start), so modules here import heavy SDKs (Firestore, firebase-admin,
OpenAI, Stripe) inside the functions that need them, never at module level.
"""
