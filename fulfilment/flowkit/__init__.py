"""The flow kit: what the steps (fulfilment/steps/) and every partner's flow (fulfilment/partners/<name>/)
share, so that neither imports the other.

- flow.py      `PartnerFlow`, the one protocol a partner implements; `Partners`; `StepContext`
- fencing.py   claims and the fenced changes a step or flow makes (record, park, release_and_retry,
               keep_answer), step deadlines, the delivery-deadline check
- orders.py    an order whose outcome is unknown: wait_or_hold, keep_late_order, the absence policy
- errors.py    the kinds of partner failure (transient, permanent, account, unknown outcome...)
- tickets.py   what a flow that refreshes tickets returns
"""
