"""Layer converters, one module per family; each registers itself with `@register(...)`."""
