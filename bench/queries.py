"""The scenarios' GraphQL documents and caller.

"Every field" is every field of ``Customer`` and of the types under it, except
``Ticket.comments``: a ticket's conversation is one helpdesk call per ticket (a third wave), which
the issue's limit (S1: 20 + 50 ms, 9 calls) does not include.
"""

from __future__ import annotations

import base64

# Roles whose union allows nearly everything (the e2e tests' "all seeing" caller).
ROLES = ["data_steward", "finance", "support_agent", "legal", "executive"]
SUBJECT = "u-bench"
NESTED_FIRST = 5

EVERY_FIELD = f"""
fragment Everything on Customer {{
  id accountNo kind name region status inPool createdAt contactName title email phone address taxId
  owner {{ userId name email region role }}
  orders(first: {NESTED_FIRST}) {{
    orderNo accountNo orderedAt status total {{ amount currency }}
    items {{ sku name qty unitPrice {{ amount currency }} }}
  }}
  payments(first: {NESTED_FIRST}) {{
    paymentId accountNo orderNo paidAt amount {{ amount currency }} method invoiceNo cardLast4 bankAccount
  }}
  opportunities {{ opportunityId accountNo title stage amount {{ amount currency }} expectedClose updatedAt }}
  activities(first: {NESTED_FIRST}) {{ activityId accountNo type occurredAt subject notes byUser }}
  tickets(first: {NESTED_FIRST}) {{
    id subject category priority status channel assignee createdAt updatedAt requesterEmail
    satisfaction {{ score comment }}
  }}
  satisfaction {{ rated average lastRatedAt }}
  contracts {{
    contractId type status signedOn startsOn endsOn autoRenew confidential updatedOn partyTaxId partyName
    value {{ amount currency }} paymentTerms
  }}
  lastContactAt dormant
}}
"""

S1_QUERY = "query S1($id: ID!) { customer(id: $id) { ...Everything } }\n" + EVERY_FIELD

S2_PAGE_SIZE = 50
S2_QUERY = (
    "query S2($first: Int!) { customers(first: $first) {"
    " totalCount pageInfo { hasNextPage endCursor } edges { cursor node { ...Everything } } } }\n"
    + EVERY_FIELD
)


def customer_id(account_no: str) -> str:
    """The Relay id of a customer (``schema.ids.encode_id``)."""
    return base64.urlsafe_b64encode(f"Customer:{account_no}".encode()).decode().rstrip("=")
