"""forward_step of the issue-4 networks (a CoX3D-style block stack at 3x64x64 and a Conv1d+LSTM head) in
continual-c (via the binding) and in the reference `continual` package, batch 1 and 8, one thread, one run.
Run: OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 CONTINUAL_LIB=build/libcontinual.so /usr/bin/python3 tools/bench_containers.py"""
import sys, time, numpy as np, torch, warnings
import os; R=os.path.dirname(os.path.dirname(os.path.abspath(__file__))); sys.path[:0]=[R+'/tests/python', R+'/python', os.environ.get('CO_REFERENCE_PYTHONPATH','/tmp/ref/ci')]
torch.set_num_threads(1)
import continual as co, continual_c
import test_examples as te
from co_helpers import randomise_norms
warnings.simplefilter("ignore")
def tm(fn, frames, n=200, w=40):
    for i in range(w): fn(frames[i%4])
    ts=[]
    for i in range(n):
        t0=time.perf_counter(); fn(frames[i%4]); ts.append(time.perf_counter()-t0)
    return np.median(ts)*1e3
for name, build, shape in [("CoX3D-style stack", lambda: randomise_norms(te._x3d_stack()), (3,64,64)),
        ("Conv1d+LSTM head", lambda: co.Sequential(co.Conv1d(64,128,3,padding=1), torch.nn.ReLU(), co.LSTM(128,128,num_layers=2), co.Linear(128,10,channel_dim=1)), (64,))]:
    torch.manual_seed(0); net=build().eval()
    continual_c.export(net, os.path.join(os.environ.get("TMPDIR","/tmp"),"bench_containers.safetensors"), input_shape=shape)
    m=continual_c.load(os.path.join(os.environ.get("TMPDIR","/tmp"),"bench_containers.safetensors"))
    for B in (1,8):
        s=m.stream(B, shape); frames=[np.random.randn(B,*shape).astype(np.float32) for _ in range(4)]
        c=tm(lambda f: s.forward_step(f), frames)
        net.clean_state(); tf=[torch.from_numpy(f) for f in frames]
        with torch.no_grad(): r=tm(lambda f: net.forward_step(f), tf)
        print("%-20s B=%d  C %.4f ms  reference %.4f ms  ratio %.1fx"%(name,B,c,r,r/c))
