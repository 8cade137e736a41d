"""python3 -m tools.zoo {list | export NAME OUT.safetensors [--small] | macs [NAME ...] | verify [NAME ...]}"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))


def main():
    ap = argparse.ArgumentParser(prog="python3 -m tools.zoo", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    e = sub.add_parser("export", help="export a zoo model through continual_c.export")
    e.add_argument("name")
    e.add_argument("out")
    e.add_argument("--small", action="store_true", help="the test size instead of the paper configuration")
    e.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("macs", help="analytic MACs per step at the paper configuration vs the paper")
    m.add_argument("names", nargs="*")
    m.add_argument("--small", action="store_true")
    v = sub.add_parser("verify", help="pure-Python oracle checks against the reference")
    v.add_argument("names", nargs="*")
    a = ap.parse_args()

    import torch

    from . import MODELS

    if a.cmd == "list":
        for n, s in MODELS.items():
            print("%-11s %-22s paper %.4g GFLOPs/step, oracle %s, frame %s" % (
                n, s.title, s.paper_gflops, s.oracle, s.input_shape()))
    elif a.cmd == "export":
        import continual_c

        from .common import randomize

        spec = MODELS[a.name]
        torch.manual_seed(a.seed)
        net = spec.build(small=a.small)
        randomize(net, a.seed)
        net.eval()
        desc = "%s (continual-c tools/zoo%s); paper: %.3g GFLOPs per step%s" % (
            spec.title, ", test size" if a.small else ", paper configuration", spec.paper_gflops,
            " (%s)" % spec.paper_note if spec.paper_note else "")
        continual_c.export(net, a.out, input_shape=spec.input_shape(small=a.small), description=desc)
        print("wrote %s (%s, frame %s)" % (a.out, spec.title, spec.input_shape(small=a.small)))
    elif a.cmd == "macs":
        from .macs import report

        report(a.names or list(MODELS), small=a.small)
    elif a.cmd == "verify":
        from .verify import main as vmain

        vmain(a.names)


if __name__ == "__main__":
    main()
