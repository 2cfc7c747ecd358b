"""Enums of the graph: the departmental values, upper-cased (``bank_transfer`` → ``BANK_TRANSFER``).

Each member's value is the departmental value, so a resolver can hand a domain object's plain string
straight to the schema.
"""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum
class CustomerKind(Enum):
    COMPANY = "company"
    PERSON = "person"


@strawberry.enum
class Region(Enum):
    EAST = "east"
    NORTH = "north"
    SOUTH = "south"
    WEST = "west"
    CENTRAL = "central"


@strawberry.enum
class CustomerStatus(Enum):
    LEAD = "lead"
    PROSPECT = "prospect"
    CUSTOMER = "customer"
    CHURNED = "churned"


@strawberry.enum
class OrderStatus(Enum):
    PENDING = "pending"
    PAID = "paid"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


@strawberry.enum
class PaymentMethod(Enum):
    CARD = "card"
    BANK_TRANSFER = "bank_transfer"
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"


@strawberry.enum
class OpportunityStage(Enum):
    QUALIFY = "qualify"
    PROPOSE = "propose"
    NEGOTIATE = "negotiate"
    WON = "won"
    LOST = "lost"


@strawberry.enum
class ActivityType(Enum):
    CALL = "call"
    EMAIL = "email"
    MEETING = "meeting"
    VISIT = "visit"
    WECHAT = "wechat"


@strawberry.enum
class SalesRole(Enum):
    REP = "rep"
    MANAGER = "manager"


@strawberry.enum
class TicketStatus(Enum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


@strawberry.enum
class TicketCategory(Enum):
    COMPLAINT = "complaint"
    QUESTION = "question"
    INCIDENT = "incident"
    REQUEST = "request"


@strawberry.enum
class TicketPriority(Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


@strawberry.enum
class TicketChannel(Enum):
    EMAIL = "email"
    PHONE = "phone"
    CHAT = "chat"
    WEB = "web"


@strawberry.enum
class ContractType(Enum):
    SALES = "sales"
    SERVICE = "service"
    FRAMEWORK = "framework"
    NDA = "nda"


@strawberry.enum
class ContractStatus(Enum):
    DRAFT = "draft"
    ACTIVE = "active"
    EXPIRED = "expired"
    TERMINATED = "terminated"
