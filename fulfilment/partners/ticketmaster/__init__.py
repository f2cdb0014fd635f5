"""The Ticketmaster Partner API (seeds 003/004, ../shared/ticketmaster-contract.md): its HTTP
client (`api`), everything about it no source documents (`assumed`) and its sandbox (`sandbox`).
Issue 9; the core is wired to it in a later step."""
