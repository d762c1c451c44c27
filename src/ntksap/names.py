"""Names shared by every layer of ntksap, with no dependencies of their own: the kinds of run
and the method names that make them."""

DENSE = "dense"  # the method name of the unpruned baseline (a run that prunes nothing)
IMP = "imp"  # the method name of iterative magnitude pruning with rewinding
PRUNE = "prune"  # the kind of a run pruned at initialization by a registered method


def kind_of(method: str) -> str:
    """The kind of a run of ``method``: ``dense``, ``imp``, or ``prune`` for every pruning
    method. A run records its method (run directories and stores are named by it); its kind
    is this function of it, here and nowhere else."""
    return method if method in (DENSE, IMP) else PRUNE
