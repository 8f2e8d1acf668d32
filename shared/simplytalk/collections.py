"""Collection names, in one place (the frontend and the rules use the same)."""

USERS = "users"
VAPI_ASSISTANTS = "assistants"
OPENAI_ASSISTANTS = "openaiAssistants"
TOKEN_USAGE = "tokenUsage"
USAGE_EVENTS = "usageEvents"
USAGE_SHARDS = "usageShards"  # tokenUsage/{uid}/usageShards/{YYYY}-{k}: a year's counters (legacy: {k})
ROLLUP_LEASES = "rollupLease"  # tokenUsage/{uid}/rollupLease/current: one mirror rollup at a time
APPLIED_EVENTS = "applied"  # tokenUsage/{uid}/applied/{eventId}: counted-once markers
RATE_CARDS = "rateCards"
INVOICES = "invoices"
BILLING_LEDGER = "billingLedger"  # billingLedger/{uid}: lastInvoiceId, updatedAt (and a legacy all-years `billed`)
LEDGER_YEARS = "years"  # billingLedger/{uid}/years/{YYYY}: what that year's periods' invoices have billed
INVOICE_RUNS = "invoiceRuns"  # invoiceRuns/{period}: the monthly run's progress and summary
STRIPE_CUSTOMERS = "stripeCustomers"  # stripeCustomers/{customerId} -> {userId}: webhook lookups
STRIPE_EVENTS = "stripeEvents"  # stripeEvents/{eventId}: processed-event markers
REALTIME_CALLS = "realtimeCalls"  # realtimeCalls/{callId}: calls the server started (the id is OpenAI's)
CALL_TRANSCRIPT = "transcript"  # realtimeCalls/{callId}/transcript/{itemId}: what was said
CALL_SLOTS = "realtimeCallSlots"  # realtimeCallSlots/{uid}/slots/{k}: a user's concurrent-call slots
TAP_LEASES = "realtimeTaps"  # realtimeTaps/{callId}: which tap run watches the call, until when
SLOTS = "slots"
