"""Model: U-Net frame transformer (see SPEC section 4)."""
