"""Other engines running fipo_nb's objective: `verl` (the scale-out path). Each module imports its engine
lazily; nothing in fipo_nb's core or trainer imports them."""
