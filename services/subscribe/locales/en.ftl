# What the subscribe service tells people, in English. Every message here has its twin in
# ru.ftl (a test checks).

not-in-plan = Unavailable — subscribe to a plan: { $function } is not in the { $plan } plan.
quota-used-up = This period's quota is used up — upgrade your plan or wait for the next period.
insufficient-funds = The balance does not cover the plan; top up first.
unavailable = Subscriptions are unavailable right now; try again in a moment.

# Refused input.
free-is-everyones = everyone has the free plan; cancel a paid plan to return to it
nothing-to-cancel = there is no paid subscription to cancel
plan-archived = this plan is no longer offered; choose another one
plan-other-currency = this plan is not priced in { $currency }, the currency sold here; choose another one
plan-exists = a plan with this code exists already
plan-free-stays = the free plan is everyone's: it cannot be archived, and its price stays 0
plan-code-mismatch = the plan's code cannot change
