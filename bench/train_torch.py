"""PyTorch twin of runtime/examples/bench_train.rs: the same cnn_lstm (Conv1d(8->32,k3,p1)+ReLU ->
LSTM(32->64) -> last state -> Linear(64->3)), cross-entropy, Adam, random windows. One JSON line."""
import argparse, json, time

import torch
from torch import nn


class CnnLstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 32, 3, padding=1)
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, 3)

    def forward(self, x):  # x: [batch, lookback, 8]
        h = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        _, (hn, _) = self.lstm(h)
        return self.head(hn[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lookback", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-cudnn", action="store_true", help="per-step LSTM kernels instead of cuDNN's fused RNN")
    a = p.parse_args()
    torch.backends.cudnn.enabled = not a.no_cudnn
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = CnnLstm().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = (torch.rand(a.batch_size, a.lookback, 8) * 2 - 1).to(dev)
    y = torch.randint(0, 3, (a.batch_size,)).to(dev)
    timed = 0.0
    for step in range(a.warmup + a.steps):
        t = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()  # waits for the device, as burn's into_scalar does
        if step >= a.warmup:
            timed += time.perf_counter() - t
    print(json.dumps({
        "framework": "pytorch", "version": torch.__version__, "device": a.device, "cudnn": not a.no_cudnn, "model": "cnn_lstm",
        "lookback": a.lookback, "batch_size": a.batch_size, "threads": a.threads,
        "parameters": sum(p.numel() for p in model.parameters()), "steps": a.steps,
        "samples_per_s": round(a.steps * a.batch_size / timed, 1),
    }))


if __name__ == "__main__":
    main()
