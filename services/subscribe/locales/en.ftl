# What the subscribe service tells people, in English. Every message here has its twin in
# ru.ftl (a test checks).

not-in-plan = Unavailable — subscribe to a plan: { $function } is not in the { $plan } plan.
quota-used-up = This period's quota is used up — upgrade your plan or wait for the next period.
insufficient-funds = The balance does not cover the plan; top up first.
unavailable = Subscriptions are unavailable right now; try again in a moment.

# Refused input.
free-is-everyones = everyone has the free plan; cancel a paid plan to return to it
nothing-to-cancel = there is no paid subscription to cancel
