"""Everything /metrics serves: the declaration of every metric (`contract`), PollResult ->
families (`render`), and the endpoint that owns the registries and the render cache
(`endpoint`)."""
