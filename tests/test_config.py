"""StyleConfig: defaults, string forms, and every bad value rejected with one line."""

import math

import pytest

from vggstyle.config import DEFAULT_ITERATIONS, StyleConfig
from vggstyle.errors import ConfigError


def test_defaults_are_valid_and_match_the_paper_layers():
    c = StyleConfig().validate(num_styles=1)
    assert list(c.content_layers) == ["relu4_2"]
    assert list(c.style_layers) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert c.iterations == DEFAULT_ITERATIONS
    assert c.optimizer == "lbfgs" and c.lr == 1.0


def test_epochs_times_steps_is_iterations():
    assert StyleConfig(epochs=10, steps_per_epoch=50).iterations == 500
    assert StyleConfig(num_iterations=7).iterations == 7
    with pytest.raises(ConfigError, match="either --num-iterations or --epochs"):
        StyleConfig(num_iterations=5, epochs=2).validate()


def test_layer_strings_with_weights():
    c = StyleConfig(style_layers="relu1_1, relu3_1:0.5", content_layers=["relu4_2:2"])
    assert c.style_layers == {"relu1_1": 1.0, "relu3_1": 0.5}
    assert c.content_layers == {"relu4_2": 2.0}
    assert c.to_dict()["style_layers"] == "relu1_1,relu3_1:0.5"


def test_unknown_layer_suggests_closest():
    with pytest.raises(ConfigError, match="unknown VGG19 layer 'relu4_5': did you mean 'relu4_4'"):
        StyleConfig(content_layers="relu4_5")
    with pytest.raises(ConfigError, match="did you mean .conv3_1."):
        StyleConfig(style_layers="conv31")
    with pytest.raises(ConfigError, match="did you mean 'relu1_1'"):
        StyleConfig(style_layers="rleu1_1,relu2_1")


@pytest.mark.parametrize("field,value,pattern", [
    ("content_weight", -1.0, "--content-weight must be a finite number from 0 to 1e\\+09"),
    ("style_weight", math.nan, "--style-weight must be a finite number from 0 to 1e\\+09"),
    ("tv_weight", math.inf, "--tv-weight must be a finite number from 0 to 1e\\+09"),
    ("range_weight", -0.5, "--range-weight must be a finite number from 0 to 1e\\+09"),
    ("num_iterations", 0, "--num-iterations must be a whole number from 1 to 1,000,000"),
    ("epochs", 0, "--epochs must be a whole number from 1 to 1,000,000"),
    ("steps_per_epoch", 0, "--steps-per-epoch must be"),
    ("image_size", 8, "--image-size must be a whole number from 16 to 16,384"),
    ("learning_rate", 0.0, "--learning-rate must be a finite number above 0"),
    ("ema_decay", 1.0, "--ema-decay must be a finite number from 0 up to"),
    ("ema_decay", -0.1, "--ema-decay must be a finite number from 0 up to"),
    ("optimizer", "sgd", "unknown --optimizer 'sgd'"),
    ("pooling", "min", "unknown --pooling"),
    ("weights_source", "vgg16", "unknown --weights-source 'vgg16'"),
    ("precision", "fp8", "unknown --precision"),
    ("device", "tpu", "unknown --device 'tpu'"),
    ("threads", 0, "--threads must be"),
    ("style_scale", 0.0, "--style-scale must be a finite number above 0"),
])
def test_bad_values(field, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        StyleConfig(**{field: value}).validate()


def test_bad_layer_weight_and_blend_weights():
    with pytest.raises(ConfigError, match="finite number >= 0"):
        StyleConfig(style_layers="relu1_1:-2")
    with pytest.raises(ConfigError, match="not a number"):
        StyleConfig(style_layers="relu1_1:x")
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        StyleConfig(style_blend_weights="3,a")
    with pytest.raises(ConfigError, match="2 values for 3 style"):
        StyleConfig(style_blend_weights="3,7").validate(num_styles=3)
    with pytest.raises(ConfigError, match="must be finite numbers from 0 to"):
        StyleConfig(style_blend_weights=[1.0, math.nan]).validate(num_styles=2)
    with pytest.raises(ConfigError, match="both 0"):
        StyleConfig(content_weight=0, style_weight=0).validate()


def test_replace_rejects_unknown_options():
    assert StyleConfig().replace(image_size=64).image_size == 64
    with pytest.raises(ConfigError, match="unknown option"):
        StyleConfig().replace(imagesize=64)


def test_config_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, vggstyle.config, vggstyle.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scale_schedule_steps_by_sqrt2_and_sums_to_the_iterations():
    schedule = StyleConfig(image_size=512, min_scale=128, coarse_to_fine_above=0,
                           num_iterations=300).scale_schedule()
    sizes = [s for s, _ in schedule]
    counts = [n for _, n in schedule]
    assert sizes == [128, 181, 256, 362, 512]
    assert sum(counts) == 300
    assert counts == sorted(counts, reverse=True)  # coarser scales get more iterations
    assert StyleConfig(single_scale=True, image_size=4096).scale_schedule() == [(4096, 250)]
    assert StyleConfig(image_size=100, coarse_to_fine_above=0).scale_schedule() == [(100, 250)]  # < min scale
    assert [s for s, _ in StyleConfig(scales="128,256", image_size=400).scale_schedule()] == [128, 256, 400]
    assert [s for s, _ in StyleConfig(scale_steps=3, min_scale=128).scale_schedule()] == [128, 256, 512]
    tiny = StyleConfig(num_iterations=2, image_size=2048).scale_schedule()
    assert len(tiny) == 2 and sum(n for _, n in tiny) == 2 and tiny[-1][0] == 2048


def test_coarse_to_fine_is_automatic_only_above_the_threshold():
    assert [s for s, _ in StyleConfig(image_size=2048).scale_schedule()] == [256, 362, 512, 724, 1024, 1448, 2048]
    assert [s for s, _ in StyleConfig(image_size=1024, coarse_to_fine_above=512).scale_schedule()] == \
        [256, 362, 512, 724, 1024]


def test_up_to_the_threshold_a_fifth_of_the_iterations_run_first_at_half_the_size():
    assert StyleConfig().scale_schedule() == [(256, 50), (512, 200)]
    assert StyleConfig(image_size=1024).scale_schedule() == [(512, 50), (1024, 200)]
    assert StyleConfig(image_size=765, num_iterations=100).scale_schedule() == [(382, 20), (765, 80)]
    assert StyleConfig(half_size_share=0.5, num_iterations=9).scale_schedule() == [(256, 4), (512, 5)]
    # One scale: asked for, below twice --min-scale, nothing left for a scale, or too few iterations.
    assert StyleConfig(single_scale=True).scale_schedule() == [(512, 250)]
    assert StyleConfig(half_size_share=0).scale_schedule() == [(512, 250)]
    assert StyleConfig(image_size=384).scale_schedule() == [(384, 250)]
    assert StyleConfig(image_size=384, min_scale=192).scale_schedule() == [(192, 50), (384, 200)]
    assert StyleConfig(num_iterations=4).scale_schedule() == [(512, 4)]
    assert StyleConfig(num_iterations=1, half_size_share=0.9).scale_schedule() == [(512, 1)]
    with pytest.raises(ConfigError, match="--half-size-share must be a finite number from 0 to 0.9"):
        StyleConfig(half_size_share=0.95).validate()


def test_a_shots_first_frame_keeps_its_own_default_of_one_scale():
    from vggstyle.video.config import FIRST_FRAME_ITERATIONS, VideoConfig

    assert VideoConfig().first_iterations(StyleConfig()) == FIRST_FRAME_ITERATIONS == 300
    assert VideoConfig().first_iterations(StyleConfig(num_iterations=40)) == 40
    assert VideoConfig().first_iterations(StyleConfig(epochs=2, steps_per_epoch=30)) == 60
    assert VideoConfig(first_frame_iterations=7).first_iterations(StyleConfig(num_iterations=40)) == 7


def test_bad_scales():
    with pytest.raises(ConfigError, match="--scales must rise strictly"):
        StyleConfig(scales="256,128").validate()
    with pytest.raises(ConfigError, match="--min-scale must be a whole number from 16"):
        StyleConfig(min_scale=8).validate()
    with pytest.raises(ConfigError, match="--coarse-to-fine-above must be"):
        StyleConfig(coarse_to_fine_above=-1).validate()
    with pytest.raises(ConfigError, match="--scale-steps must be"):
        StyleConfig(scale_steps=0).validate()


# ---------------------------------------------------------------- option specs
def test_every_field_declares_its_option_spec():
    from vggstyle.cli.common import GROUP_TITLES
    from vggstyle.config import KINDS, config_fields, config_options

    options = config_options()
    assert [o.name for o in options] == [f.name for f in config_fields()]
    for o in options:
        assert o.kind in KINDS and o.group in GROUP_TITLES and o.help, o
        assert o.web in (True, False), f"{o.name}: web must be declared True or False"
        assert (o.kind in ("choice", "choice-or-path")) == bool(o.choices), o.name


def test_what_a_web_client_may_not_set_is_written_down():
    from vggstyle.config import config_options

    server_only = {o.name for o in config_options() if not o.web}
    # Written out by hand: a change to this boundary must be a visible change to this test.
    assert server_only == {"max_input_pixels", "style_masks", "weights_source", "weights",
                           "weights_preprocessing", "device", "precision", "threads", "winograd", "checkpoint"}
    assert not [o.name for o in config_options() if o.web and o.kind in ("path", "paths")]


def test_shown_defaults_and_the_auto_on_off_constant():
    from vggstyle.config import AUTO_ON_OFF, option

    assert option("num_iterations").shown == DEFAULT_ITERATIONS == 250
    assert option("style_layers").shown == "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"
    assert option("learning_rate").shown is None and option("learning_rate").optional
    assert option("checkpoint").choices == AUTO_ON_OFF == ("auto", "on", "off")
    assert option("init").choices == ("content", "random")


def test_page_help_names_no_command_line_flags():
    from vggstyle.config import config_options

    for o in config_options():
        if o.web:
            assert "--" not in (o.page_help or o.help), o.name


@pytest.mark.parametrize("seed", [-1, 2**63, 10**40])
def test_seed_out_of_range(seed):
    with pytest.raises(ConfigError, match="--seed must be a whole number from 0 to 9,223,372,036,854,775,807"):
        StyleConfig(seed=seed).validate()
    StyleConfig(seed=2**63 - 1).validate()


def test_style_scale_cannot_ask_for_a_style_larger_than_memory_allows():
    with pytest.raises(ConfigError, match="--style-scale 90 makes the style images 8640 px"):
        StyleConfig(image_size=96, style_scale=90, max_input_pixels=50_000_000).validate()
    with pytest.raises(ConfigError, match="lower --style-scale"):
        StyleConfig(image_size=128, style_scale=40, max_input_pixels=20_000_000).validate()
    StyleConfig(image_size=512, style_scale=2).validate()  # 1024 px: fine
    StyleConfig(image_size=48, max_input_pixels=1000).validate()  # not larger than the result: fine
