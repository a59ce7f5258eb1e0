"""open_clip's own train_one_epoch with --accum-freq 2 gives the full-batch CE-CLIP gradient."""

import copy
import random

import torch

from openclip_ce.training.data import NegativesTokenizer, encode_bundle
from openclip_ce.testing.toy_shards import make_sample
from openclip_ce.training.plugin import plugin
from openclip_ce.testing.training_runs import EpochData, EpochLoader, tiny_model, train_step_args


def test_accum_freq_2_equals_full_batch(tmp_path):
    import open_clip
    from open_clip_train.train import train_one_epoch

    name = tiny_model(tmp_path)
    torch.manual_seed(0)
    # float64: the two runs pack their text rows differently (4 + 4 captions vs 8), so float32 would
    # differ by summation order alone
    base = open_clip.create_model(name, output_dict=True).double()
    tok = NegativesTokenizer(open_clip.get_tokenizer(name))
    rng = random.Random(0)
    texts, images = [], []
    for i in range(8):
        caption, _, negs = make_sample(rng)
        if i == 3:
            negs = {k: None for k in negs}  # one sample without any negative
        texts.append(encode_bundle(caption, negs))
    images = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    tokens = tok(texts)

    results = {}
    for accum, batches in ((1, [(images, tokens)]), (2, [(images[:4], tokens[:4]), (images[4:], tokens[4:])])):
        model = copy.deepcopy(base)
        args = train_step_args(accum, 8 // accum)
        plugin.adapt_model(args, model)
        loss = plugin.create_loss(args)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        data = {"train": EpochData(EpochLoader(batches, 8 // accum))}
        train_one_epoch(model, data, loss, 0, opt, None, None, None, args)
        results[accum] = (dict(model.named_parameters()), loss.threshold_dict())

    p1, th1 = results[1]
    p2, th2 = results[2]
    moved = 0
    for k in p1:
        torch.testing.assert_close(p2[k], p1[k], rtol=1e-9, atol=1e-11, msg=f"parameter {k}")
        moved += int(not torch.equal(p1[k], dict(base.named_parameters())[k]))
    assert moved > 10  # the step really changed the model
    assert th1 == th2 and any(v != 0 for v in th1.values())  # one threshold update, from the whole batch
