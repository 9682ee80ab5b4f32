"""Scale-out: the same blocks of work run in this process or on a Ray cluster (`backend.mapped`)."""
