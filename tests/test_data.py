import torch

from squeezestudy.data import fashion_mnist as data


def test_real_data_counts(fashion_mnist):
    assert len(fashion_mnist.train) + len(fashion_mnist.val) == 60_000
    assert len(fashion_mnist.test) == 10_000
    full_train = torch.cat([fashion_mnist.train.labels, fashion_mnist.val.labels])
    assert torch.bincount(full_train).tolist() == [6_000] * 10
    assert torch.bincount(fashion_mnist.test.labels).tolist() == [1_000] * 10
    assert torch.bincount(fashion_mnist.val.labels).tolist() == [500] * 10
    assert fashion_mnist.train.images.dtype == torch.uint8
    assert fashion_mnist.train.images.shape[1:] == (28, 28)


def test_shared_copy_is_checksum_verified(fashion_mnist):
    if (fashion_mnist.source / "SHA256SUMS").is_file():
        assert len(fashion_mnist.verified) == 4


def test_train_statistics(fashion_mnist):
    mean, std = fashion_mnist.mean_std()
    # the shared copy's README gives 0.2861 / 0.3528 over all 60,000
    assert abs(mean - 0.286) < 0.002 and abs(std - 0.353) < 0.002


def test_validation_is_disjoint_and_stratified(fashion_mnist):
    idx = data.validation_indices(torch.arange(60_000) % 10)
    assert len(idx) == 5_000 and len(set(idx.tolist())) == 5_000
    assert torch.bincount(idx % 10).tolist() == [500] * 10
    assert idx.max() == 59_999  # the last ones of each class


def test_batches_shapes_normalisation_and_resize(fashion_mnist):
    mean, std = fashion_mnist.mean_std()
    batches = data.Batches(fashion_mnist.train, 512, mean=mean, std=std)
    assert len(batches) == -(-55_000 // 512)
    x, y = next(iter(batches))
    assert x.shape == (512, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (512,)
    everything = torch.cat([b for b, _ in batches])
    assert abs(everything.mean().item()) < 1e-3 and abs(everything.std().item() - 1) < 1e-3
    big = data.Batches(fashion_mnist.test, 100, mean=mean, std=std, image_size=112, channels_last=True)
    x, _ = next(iter(big))
    assert x.shape == (100, 1, 112, 112)


def test_shuffle_is_seeded_and_complete(small_fashion_mnist):
    split = small_fashion_mnist.train
    def order(seed):
        b = data.Batches(split, 100, mean=0.0, std=1.0, shuffle=True)
        b.set_seed(seed)
        return torch.cat([y for _, y in b])
    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    assert torch.bincount(order(1)).tolist() == torch.bincount(split.labels).tolist()


def test_augmentation_crops_and_flips_within_bounds(small_fashion_mnist):
    split = small_fashion_mnist.train
    b = data.Batches(split, 256, mean=0.0, std=1 / 255, augment=True, crop_padding=2)
    b.set_seed(0)
    images = split.images[:256]
    out = b.prepare(images).squeeze(1).round().to(torch.uint8)
    assert out.shape == images.shape and not torch.equal(out, images)
    # each output is some shift (|dy|, |dx| <= 2) of the input, possibly mirrored
    import torch.nn.functional as F
    padded = F.pad(images, (2, 2, 2, 2))
    for i in range(16):
        candidates = [padded[i, dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_subset_is_balanced(fashion_mnist):
    sub = fashion_mnist.train.subset(1000)
    assert torch.bincount(sub.labels).tolist() == [100] * 10
    assert data.CLASSES[9] == "Ankle boot"
