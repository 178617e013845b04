"""Settlement: accounts, the double-entry journal, rate models, holds, bills and payouts."""
