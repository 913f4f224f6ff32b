"""Prisma migrations: the `_prisma_migrations` history, checksums, replay and the deploy prediction."""
