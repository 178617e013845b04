"""Payment-provider adapters: the interface the ledger talks to, and a simulated provider for dev and tests.

A real adapter (Alipay, WeChat Pay, a bank) implements `PaymentProvider`; the ledger only posts an entry once
the provider reports success, and reconciliation later matches the provider's statement against the payments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ProviderResult:
    succeeded: bool
    reference: str
    message: str = ""


class PaymentProvider(Protocol):
    name: str

    def charge(self, *, amount_minor: int, currency: str, token: str, idempotency_key: str) -> ProviderResult:
        """Collects money from the customer's payment method (a top-up)."""
        ...

    def refund(
        self, *, amount_minor: int, currency: str, original_reference: str, idempotency_key: str
    ) -> ProviderResult:
        """Returns money to the payment method of an earlier charge."""
        ...

    def transfer(self, *, amount_minor: int, currency: str, destination: str, idempotency_key: str) -> ProviderResult:
        """Sends money out (withdrawal, payout)."""
        ...


class SimulatedProvider:
    """Deterministic: references derive from the idempotency key; tokens/destinations starting with
    "decline" fail, everything else succeeds."""

    def __init__(self, name: str = "simulated") -> None:
        self.name = name

    def _ref(self, op: str, key: str) -> str:
        return f"{self.name}-{op}-{hashlib.sha256(key.encode()).hexdigest()[:20]}"

    def charge(self, *, amount_minor: int, currency: str, token: str, idempotency_key: str) -> ProviderResult:
        if token.startswith("decline"):
            return ProviderResult(False, self._ref("ch", idempotency_key), "card declined")
        return ProviderResult(True, self._ref("ch", idempotency_key))

    def refund(
        self, *, amount_minor: int, currency: str, original_reference: str, idempotency_key: str
    ) -> ProviderResult:
        return ProviderResult(True, self._ref("rf", idempotency_key))

    def transfer(self, *, amount_minor: int, currency: str, destination: str, idempotency_key: str) -> ProviderResult:
        if destination.startswith("decline"):
            return ProviderResult(False, self._ref("tr", idempotency_key), "destination refused")
        return ProviderResult(True, self._ref("tr", idempotency_key))


class ProviderRegistry:
    def __init__(self, providers: list[PaymentProvider] | None = None) -> None:
        found = providers if providers is not None else [SimulatedProvider("simulated"), SimulatedProvider("offline")]
        self._providers = {p.name: p for p in found}

    def get(self, name: str) -> PaymentProvider:
        from voltcloud.platform.errors import InvalidArgument

        provider = self._providers.get(name or "simulated")
        if provider is None:
            raise InvalidArgument.for_field(
                "provider", f"unknown payment provider {name!r}; one of {sorted(self._providers)}"
            )
        return provider


DEFAULT_PROVIDERS = ProviderRegistry()
