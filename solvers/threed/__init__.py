"""Three-dimensional pruning, the core (Wang et al., "Accelerate CNNs from Three Dimensions").

The torch binding measures the accuracies of pruned-and-fine-tuned networks
at a few ratio triples ``(d, w, r)`` (depth, width, resolution; 1 = the
unpruned network). This package fits a polynomial accuracy model to them
(:mod:`.model`),

    acc(d, w, r) = sum_m c_m d^{i_m} w^{j_m} r^{k_m},

takes the FLOPs as a sum of power terms (:mod:`.flops`),

    F(d, w, r) = sum_t f_t d^{p_t} w^{q_t} r^{s_t},

and solves (:mod:`.optimum`)

    max_{d, w, r}  acc(d, w, r)   s.t.  F(d, w, r) <= budget,
                                        lower <= (d, w, r) <= upper  (within (0, 1]),

to global optimality on the box (dense grid, SLSQP refinement, and an upper
bound on the true maximum), and over the realizable discrete configurations.
"""
from .flops import FlopsModel
from .model import FORMS, AccuracyModel, fit_accuracy_model, monomial_exponents
from .optimum import ThreeDOptimum, maximize_accuracy, realizable_optimum
