"""open_clip's own train_one_epoch with --accum-freq 2 gives the full-batch CE-CLIP gradient."""

import torch

from openclip_ce.training.data import NegativesTokenizer
from openclip_ce.testing.training_runs import tiny_model, toy_batch_texts, train_full_and_accumulated, train_step_args


def test_accum_freq_2_equals_full_batch(tmp_path):
    import open_clip

    name = tiny_model(tmp_path)
    torch.manual_seed(0)
    # float64: the two runs pack their text rows differently (4 + 4 captions vs 8), so float32 would
    # differ by summation order alone
    base = open_clip.create_model(name, output_dict=True).double()
    tok = NegativesTokenizer(open_clip.get_tokenizer(name))
    tokens = tok(toy_batch_texts())  # 8 samples, one without any negative
    images = torch.randn(8, 3, 32, 32, dtype=torch.float64)

    results = train_full_and_accumulated(base, images, tokens, train_step_args)

    p1, th1 = results[1]
    p2, th2 = results[2]
    moved = 0
    for k in p1:
        torch.testing.assert_close(p2[k], p1[k], rtol=1e-9, atol=1e-11, msg=f"parameter {k}")
        moved += int(not torch.equal(p1[k], dict(base.named_parameters())[k]))
    assert moved > 10  # the step really changed the model
    assert th1 == th2 and any(v != 0 for v in th1.values())  # one threshold update, from the whole batch
