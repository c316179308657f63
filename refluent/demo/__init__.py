"""``refluent demo``: the whole loop on the embedded services (see :mod:`refluent.demo.run`)."""
