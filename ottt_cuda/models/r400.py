"""R400 (supplementary D.3): Fashion-MNIST, 784 -> 400 recurrent LIF (sWS on the
input weights) -> 10 readout, dropout 0.2 on the hidden spikes (one mask per
sequence). The input synapse's gradient uses the trace of the input (x_hat,
Theorem 2 of the supplementary).

Where the dropout sits is not in the supplementary. feedback_dropout=False
(the default, as released first): on the path to the readout only, the spikes
fed back to the recurrent synapse are not dropped. feedback_dropout=True: the
same mask also on the fed-back spikes, so a dropped neuron is silent to every
synapse for the sequence; the `fmnist` recipe uses it (docs/fmnist_recipe.md gives the
measurements)."""
import torch.nn as nn

from .. import nn as onn
from .._validation import boolean
from .._validation import positive_ints as check_sizes
from ._init import init_paper


class R400(nn.Module):
    # forward is the composition of these layers in this order: train_step's OTTT_A / SLTT loop may
    # run its time steps through them without autograd (nn._chain). Keep the two in step.
    _ottt_chain = ("flatten", "rnn", "dropout", "readout")

    def __init__(self, num_classes=10, in_features=784, hidden=400, dropout=0.2, tau=2.0, feedback_dropout=False):
        super().__init__()
        boolean(feedback_dropout, "feedback_dropout")
        self.flatten = nn.Flatten(1)
        self.rnn = onn.RecurrentLIF(in_features, hidden, ws=True, input_trace=True, tau=tau,
                                    dropout=dropout if feedback_dropout else 0.0)
        # With feedback_dropout the recurrent layer's own mask already covers the readout's input.
        self.dropout = onn.Dropout(0.0 if feedback_dropout else dropout)
        self.readout = onn.Linear(hidden, num_classes, trace_decay=1.0 - 1.0 / tau)
        init_paper(self)

    def forward(self, x):
        return self.readout(self.dropout(self.rnn(self.flatten(x))))


def r400(num_classes=10, **kwargs):
    check_sizes(num_classes=num_classes)
    return R400(num_classes, **kwargs)
