"""LeNet-300-100 on scikit-learn's digits: a real trained network for the library end to end.

* `data`: the fixed train/test split; `network`: the model, its training loop and accuracy;
* `compression`: the Deep Compression pipeline (train, prune with retraining, share, fine-tune);
* `demo`: the demo's configuration, schedule, seeds and result (`dcomp demo` prints it);
* `eie_ready`: the network at a reduced schedule with EIE's codebooks and real activations.

Needs scikit-learn (the ``examples`` extra) when the data is loaded.
"""

from workloads.digits.compression import DigitsCompression, Schedule, compress_digits
from workloads.digits.data import DigitsSplit, load_digits_split
from workloads.digits.demo import DEMO_CONFIG, DEMO_SCHEDULE, DemoRun, demo_run, run_demo, summarize
from workloads.digits.eie_ready import DigitsLayer, DigitsWorkload, digits_workload
from workloads.digits.network import LeNet300100, accuracy, single_thread, train

__all__ = [
    "DEMO_CONFIG",
    "DEMO_SCHEDULE",
    "DemoRun",
    "DigitsCompression",
    "DigitsLayer",
    "DigitsSplit",
    "DigitsWorkload",
    "LeNet300100",
    "Schedule",
    "accuracy",
    "compress_digits",
    "demo_run",
    "digits_workload",
    "load_digits_split",
    "run_demo",
    "single_thread",
    "summarize",
    "train",
]
