"""The per-step training loss ((1-a) CE(u, y) + a MSE(u, onehot)) / T in the two forms the
fast paths use instead of autograd: its value for many steps at once, and its gradient in
closed form. training.step_loss is the autograd form both are tested against; train_step's
loop (training._Runner) and the CUDA-graph step (nn._graph) share these, so the three cannot
drift apart. Neither calls F.one_hot when given a one-hot in the outputs' dtype: one_hot
checks its indices on the host, which a CUDA-graph capture cannot do."""
import torch
import torch.nn.functional as F


def step_losses(outs, y, T, loss_alpha, onehot):
    """step_loss of every step at once: outs [n, B, C] (detached, float32/64) -> [n] float64.
    Cross-entropy as the mean of -log_softmax at the targets (what F.cross_entropy computes;
    its reduction='none' form over n*B rows costs ~6x more at this size)."""
    n, B, C = outs.shape
    with torch.no_grad():
        picked = torch.log_softmax(outs, -1).gather(-1, y.view(1, B, 1).expand(n, B, 1))
        loss = picked.mean((1, 2)).mul_(-(1.0 - loss_alpha))
        if loss_alpha:
            oh = onehot if onehot is not None and onehot.dtype == outs.dtype else F.one_hot(y, C).to(outs.dtype)
            loss.add_((outs - oh).square_().mean((1, 2)), alpha=loss_alpha)
        return loss.div_(T).to(torch.float64)


def check_step_output(u):
    """The closed forms need one [batch, classes] output per time step: a clear error otherwise."""
    if u.dim() != 2:
        raise ValueError(f"the model's output must be [batch, classes] at each time step, got shape "
                         f"{tuple(u.shape)}")


def loss_grad(u, onehot, T, loss_alpha):
    """d step_loss / d u in closed form for one step's output u [B, C] (detached, float32/64) and
    onehot = one_hot(y, C) in u's dtype: ((1-a) (softmax(u) - onehot) / B + a 2 (u - onehot) / (B C)) / T."""
    B, C = u.shape
    with torch.no_grad():
        g = torch.softmax(u, -1).sub_(onehot).mul_((1.0 - loss_alpha) / (B * T))
        if loss_alpha:
            g.add_(u - onehot, alpha=2.0 * loss_alpha / (B * C * T))
        return g
