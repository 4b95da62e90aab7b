"""TRIM-POMDP: routing as a partially observable decision problem.

`solver` is a generic grid value iteration for small POMDPs; `model` builds the routing POMDP (hidden
states S0/S1/S2, transitions from the models' step accuracies, termination from solution lengths, and the
PRM's observation model) and fits it on labelled steps; the policy that reads a solved table lives in
`trim.policies.pomdp`."""
