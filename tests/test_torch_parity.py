"""Cross-framework parity with the PyTorch ConvNet and ResNet-18 (skipped without torch).

ConvNet (width 8, batch 64): logits max |diff| ~1e-5, loss relative ~1e-7, conv
gradients relative ~1e-6, one SGD step (momentum, weight decay) relative ~1e-6,
running statistics ~1e-7.
ResNet-18 (width 8, batch 8 of 32x32x3; torch 2.13 CPU): logits max |diff| 1.6e-6 (of
|logits| <= 3.3), loss equal, conv gradients relative <= 1.5e-6, norm scale/bias
gradients (affine) <= 2.1e-6, running mean 2.9e-7 / var 2.5e-8, one SGD step 2.9e-7,
eval-mode logits after it 6e-8. With the shortcut reading x instead of ReLU(BN1(x))
(our wiring before) the logits differ by 1.5.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from benchmarks.torch_convnet import (  # noqa: E402
  TorchConvNetSI,
  conv_grads_as_hwio,
  load_flax_params,
)
from si_jax import models, optim  # noqa: E402
from si_jax.engine import step as step_lib  # noqa: E402

from conftest import make, rng_images  # noqa: E402


@pytest.fixture(scope="module")
def pair():
  torch.manual_seed(0)
  model, v, g = make("convnet_si", width=8, input_shape=(32, 32, 3))
  tmodel = TorchConvNetSI(width=8).double().float()
  load_flax_params(tmodel, v["params"])
  x = rng_images(64, (32, 32, 3), seed=3)
  y = np.arange(64, dtype=np.int32) % 10
  return model, v, g, tmodel, x, y


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def test_logits_loss_grads_match(pair):
  model, v, g, tmodel, x, y = pair
  tmodel.train()
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  logits_t = tmodel(tx)
  loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y).long())
  tmodel.zero_grad()
  loss_t.backward()
  fn = jax.value_and_grad(
      lambda p: step_lib.loss_and_aux(model, p, v["batch_stats"], x, y), has_aux=True)
  (loss, (logits, stats)), grads = fn(v["params"])
  assert np.abs(np.asarray(logits) - logits_t.detach().numpy()).max() < 1e-4
  assert float(loss) == pytest.approx(loss_t.item(), rel=1e-5)
  for i, grad_t in enumerate(conv_grads_as_hwio(tmodel)):
    assert rel(grads[f"conv_{i}"]["kernel"], grad_t) < 1e-4, i
  # running statistics after one train-mode pass (momentum 0.1, unbiased variance)
  bns = [m for m in tmodel.features if isinstance(m, torch.nn.BatchNorm2d)]
  for i, bn in enumerate(bns):
    assert rel(stats[f"norm_{i}"]["mean"], bn.running_mean.numpy()) < 1e-4
    assert rel(stats[f"norm_{i}"]["var"], bn.running_var.numpy()) < 1e-5


def test_eval_mode_and_one_sgd_step_match(pair):
  model, v, g, _, x, y = pair
  tmodel = TorchConvNetSI(width=8)
  load_flax_params(tmodel, v["params"])
  lr, wd, mu = 0.05, 5e-3, 0.9
  opt = torch.optim.SGD([c.weight for c in tmodel.convs()], lr=lr, momentum=mu, weight_decay=wd)
  tx = optim.make_optimizer(v["params"], g, lr=lr, wd=wd, momentum=mu)
  state = tx.init(v["params"])
  params, stats = v["params"], v["batch_stats"]
  # One step: a second one already sees ReLU/max-pool switches flipped by the 1e-6
  # float differences (a few of ~500k pre-activations lie that close to a kink), so
  # multi-step trajectories agree only to ~1e-3; the momentum rule itself is checked
  # against torch's formula in test_optim.py.
  for _step in range(1):
    tmodel.train()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(
        tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())),
        torch.from_numpy(y).long()).backward()
    opt.step()
    (_, (_, stats)), grads = jax.value_and_grad(
        lambda p: step_lib.loss_and_aux(model, p, stats, x, y), has_aux=True)(params)
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(jnp.add, params, updates)
  for i, conv in enumerate(tmodel.convs()):
    torch_kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    assert rel(params[f"conv_{i}"]["kernel"], torch_kernel) < 1e-5
  tmodel.eval()
  logits_t = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
  logits = model.apply({"params": params, "batch_stats": stats}, x, train=False)
  assert np.abs(np.asarray(logits) - logits_t).max() < 1e-3


def test_init_statistics_match_pytorch_defaults():
  # same architecture, PyTorch's default init: same SI count and initial norm law
  tmodel = TorchConvNetSI(width=32)
  torch_count = sum(c.weight.numel() for c in tmodel.convs())
  _, v, g = make("convnet_si", width=32, input_shape=(32, 32, 3))
  flax_count = sum(models.get_path(v["params"], p).size for p in g.si_paths)
  assert torch_count == flax_count == 387_936
  torch_norms, flax_norms = [], []
  for seed in range(5):
    torch.manual_seed(seed)
    t = TorchConvNetSI(width=32)
    torch_norms.append(float(torch.sqrt(sum((c.weight.detach()**2).sum() for c in t.convs()))))
    _, v, g = make("convnet_si", width=32, input_shape=(32, 32, 3), seed=seed)
    flax_norms.append(float(np.sqrt(sum(np.sum(np.square(models.get_path(v["params"], p)))
                                        for p in g.si_paths))))
  assert np.mean(flax_norms) == pytest.approx(np.mean(torch_norms), rel=0.01)
  # the classifier's default bias bound is 1/sqrt(fan_in) in both
  assert float(tmodel.classifier.bias.detach().abs().max()) <= 1 / np.sqrt(256)


# ResNet-18 ---------------------------------------------------------------------------
# The original scale-invariant pre-activation ResNet-18, written from its description
# (appendix B; Li & Arora's App. C): BN without affine parameters, a BN inserted in the
# downsampling shortcut, which reads the block's pre-activated input ReLU(BN1(x)),
# AvgPool2d(4) and a bias-free Linear. Module names mirror the flax ones.


class TorchPreActBlock(torch.nn.Module):

  def __init__(self, cin: int, cout: int, stride: int, affine: bool):
    super().__init__()
    self.norm1 = torch.nn.BatchNorm2d(cin, affine=affine)
    self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    self.norm2 = torch.nn.BatchNorm2d(cout, affine=affine)
    self.conv2 = torch.nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    self.downsample = stride != 1 or cin != cout
    if self.downsample:
      self.shortcut_norm = torch.nn.BatchNorm2d(cin, affine=affine)
      self.shortcut_conv = torch.nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

  def forward(self, x):
    out = torch.relu(self.norm1(x))
    shortcut = self.shortcut_conv(self.shortcut_norm(out)) if self.downsample else x
    return self.conv2(torch.relu(self.norm2(self.conv1(out)))) + shortcut


class TorchResNet18SI(torch.nn.Module):

  def __init__(self, width: int, num_classes: int = 10, affine: bool = False):
    super().__init__()
    self.stem = torch.nn.Conv2d(3, width, 3, padding=1, bias=False)
    blocks, cin = {}, width
    for stage in range(4):
      cout = width * 2**stage
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        blocks[f"layer{stage + 1}_{block}"] = TorchPreActBlock(cin, cout, stride, affine)
        cin = cout
    self.blocks = torch.nn.ModuleDict(blocks)
    self.final_norm = torch.nn.BatchNorm2d(cin, affine=affine)
    self.pool = torch.nn.AvgPool2d(4)
    self.classifier = torch.nn.Linear(cin, num_classes, bias=False)

  def forward(self, x):
    out = self.stem(x)
    for block in self.blocks.values():
      out = block(out)
    out = self.pool(torch.relu(self.final_norm(out)))
    return self.classifier(out.flatten(1))

  def named(self, kind):
    """[(flax path prefix, module)] for the modules of one kind."""
    return [(tuple(n for n in name.split(".") if n != "blocks"), m)
            for name, m in self.named_modules() if isinstance(m, kind)]


def load_resnet(tmodel: TorchResNet18SI, params) -> None:
  """Copies si_jax ResNet18SI parameters (HWIO kernels, norm scale/bias) into torch."""
  to_torch = lambda a: torch.from_numpy(np.asarray(a).copy())
  with torch.no_grad():
    for path, conv in tmodel.named(torch.nn.Conv2d):
      conv.weight.copy_(to_torch(models.get_path(params, path + ("kernel",)).transpose(3, 2, 0, 1)))
    for path, bn in tmodel.named(torch.nn.BatchNorm2d):
      if bn.affine:
        bn.weight.copy_(to_torch(models.get_path(params, path + ("scale",))))
        bn.bias.copy_(to_torch(models.get_path(params, path + ("bias",))))
    tmodel.classifier.weight.copy_(to_torch(params["classifier"]["kernel"].T))


@pytest.fixture(scope="module", params=[False, True], ids=["si", "affine"])
def resnet_pair(request):
  """The flax model, its variables, groups, batch, and its loss, logits, running
  statistics and gradients after one train-mode pass; the torch twin is built per test."""
  affine = request.param
  model, v, g = make("resnet18_si", width=8, input_shape=(32, 32, 3), train_non_si=affine)
  x = rng_images(8, (32, 32, 3), seed=5)
  y = np.arange(8, dtype=np.int32) % 10
  fn = jax.jit(jax.value_and_grad(
      lambda p: step_lib.loss_and_aux(model, p, v["batch_stats"], x, y), has_aux=True))
  (loss, (logits, stats)), grads = fn(v["params"])
  return model, v, g, x, y, (loss, logits, stats, grads)


def torch_resnet(v, g):
  tmodel = TorchResNet18SI(width=8, affine=g.train_non_si)
  load_resnet(tmodel, v["params"])
  tmodel.train()
  return tmodel


def torch_loss(tmodel, x, y):
  logits = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  return logits, torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).long())


def test_resnet_logits_loss_grads_and_stats_match(resnet_pair):
  model, v, g, x, y, (loss, logits, stats, grads) = resnet_pair
  tmodel = torch_resnet(v, g)
  logits_t, loss_t = torch_loss(tmodel, x, y)
  loss_t.backward()
  assert np.abs(np.asarray(logits) - logits_t.detach().numpy()).max() < 2e-5
  assert float(loss) == pytest.approx(loss_t.item(), rel=1e-5)
  convs = tmodel.named(torch.nn.Conv2d)
  assert len(convs) == len(g.si_paths) == 20  # stem, 16 block convs, 3 shortcut convs
  for path, conv in convs:
    grad_t = conv.weight.grad.numpy().transpose(2, 3, 1, 0)
    assert rel(models.get_path(grads, path + ("kernel",)), grad_t) < 2e-5, path
  for path, bn in tmodel.named(torch.nn.BatchNorm2d):  # 17 norms, 3 of them in shortcuts
    assert rel(models.get_path(stats, path + ("mean",)), bn.running_mean.numpy()) < 1e-4, path
    assert rel(models.get_path(stats, path + ("var",)), bn.running_var.numpy()) < 1e-5, path
    if bn.affine:  # the practical setting trains them (Fig. 21)
      assert rel(models.get_path(grads, path + ("scale",)), bn.weight.grad.numpy()) < 2e-5, path
      bias, bias_t = models.get_path(grads, path + ("bias",)), bn.bias.grad.numpy()
      if path[-1] == "shortcut_norm":
        # its bias adds a per-channel constant to the stream through the 1x1 conv,
        # which the next batch norm subtracts: the gradient is 0 up to round-off
        scale = np.linalg.norm(bn.weight.grad.numpy())
        assert max(np.abs(bias).max(), np.abs(bias_t).max()) < 1e-5 * scale, path
      else:
        assert rel(bias, bias_t) < 2e-5, path


@pytest.mark.parametrize("resnet_pair", [False], ids=["si"], indirect=True)
def test_resnet_one_sgd_step_and_eval_mode_match(resnet_pair):
  model, v, g, x, y, (_, _, stats, grads) = resnet_pair  # fully SI: only convs train
  tmodel = torch_resnet(v, g)
  lr, wd, mu = 0.05, 5e-3, 0.9
  convs = tmodel.named(torch.nn.Conv2d)
  opt = torch.optim.SGD([c.weight for _, c in convs], lr=lr, momentum=mu, weight_decay=wd)
  torch_loss(tmodel, x, y)[1].backward()
  opt.step()
  tx = optim.make_optimizer(v["params"], g, lr=lr, wd=wd, momentum=mu)
  updates, _ = tx.update(grads, tx.init(v["params"]), v["params"])
  params = jax.tree.map(jnp.add, v["params"], updates)
  for path, conv in convs:
    new_t = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    assert rel(models.get_path(params, path + ("kernel",)), new_t) < 1e-5, path
  np.testing.assert_array_equal(params["classifier"]["kernel"], v["params"]["classifier"]["kernel"])
  tmodel.eval()
  logits_t = torch_loss(tmodel, x, y)[0].detach().numpy()
  logits = model.apply({"params": params, "batch_stats": stats}, x, train=False)
  assert np.abs(np.asarray(logits) - logits_t).max() < 1e-5
