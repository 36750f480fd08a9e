"""Models in and out of NIR, the Neuromorphic Intermediate Representation (docs/nir.md).

    from_nir(graph_or_path, *, dt)          a NIR graph (or a .nir file) -> nn.Sequential of ottt_cuda layers
    to_nir(model, *, dt, input_shape)       an ottt_cuda chain -> nir.NIRGraph (nir.write it to a file)

The `nir` package is imported here, lazily: `import ottt_cuda` never needs it.

Discretization (the conventions matched)
----------------------------------------
NIR's neurons are continuous ODEs; ottt_cuda's LIF is a discrete step. With the
time step `dt`, forward Euler, input current I[t] and the reset of NIR (to v_reset):

  NIR LIF      tau dv/dt = (v_leak - v) + r I     v[t] = (1 - dt/tau) v + (dt/tau) v_leak + (dt r/tau) I[t]
  ottt_cuda    decay_input=False                  h = (1 - 1/tau') v + v_reset/tau' + x
               decay_input=True                   h = v + (x - (v - v_reset))/tau'
  hence        tau' = tau/dt, and the input coefficient dt r/tau must be 1 (decay_input=False) or r = 1 (then it
               is 1/tau': decay_input=True); ottt_cuda's hard-reset LIF leaks towards v_reset, so v_leak must equal
               v_reset. Spike z = H(v - v_threshold), then v = v_reset (NIR's hard reset). NIR fires on
               v > v_threshold, ottt_cuda on h >= v_th: they differ only for a membrane exactly at threshold.
  soft reset   NIR's LIF has none; v = h - v_th z is the subgraph LI -> Threshold -> Scale(-lam v_th / k) -> back
               into the LI (I for the IF), exact when the feedback acts one step later, as discrete executors run
               a cycle (_soft_reset_nodes; docs/nir.md).
  recurrence   RecurrentLIF = its input synapse, then a subgraph with the neuron and w_rec (Linear) from the
               spikes back into it: snnTorch's RLeaky layout, whose flat form (export_to_nir) is read too.
  NIR IF       dv/dt = r I                        v[t] = v + dt r I[t]: dt r must be 1 (convert()'s IF: no leak).
  NIR CubaLIF  tau_syn dI/dt = -I + w_in S, then the LIF above on I (the new I, as snnTorch's Synaptic): exact only
               with no synaptic memory, tau_syn = dt and w_in = 1 (I[t] = S[t]); otherwise the current is a second
               state ottt_cuda's LIF does not have.
  snnTorch     export_to_nir writes a Leaky(beta, threshold) as LIF(tau = dt/(1 - beta), r = tau/dt, v_leak = 0,
               v_reset = 0) with dt = 1e-4 (snntorch/export_nir.py), whatever its reset_mechanism (the NIR node always
               means the reset to 0: build the Leaky with reset_mechanism="zero" for the same network);
               import_from_nir reads beta = 1 - dt/tau, dt = 1e-4, reset_mechanism="zero". So pass dt=1e-4 for
               graphs from or for snnTorch: tau' = 1/(1 - beta).

A graph is accepted when it is a chain (Input -> nodes -> Output, one edge in and one out per node, a recurrent
layer's cycle counting as one node) of the nodes in docs/nir.md's table, each expressible exactly; anything
else raises NIRConversionError naming the node, its type and why. Parameters given per neuron must be equal
across the layer (ottt_cuda's neurons take scalars).
"""
from .common import NIRConversionError
from .reading import from_nir
from .writing import to_nir

__all__ = ["NIRConversionError", "from_nir", "to_nir"]
