"""Names shared by every layer of ntksap, with no dependencies of their own."""

DENSE = "dense"  # the method name of the unpruned baseline (a run that prunes nothing)
