"""The measurements that chose OPTIM_INT8_BLOCK's code (docs/PRECISION.md, "8-bit block-quantized state").

Adam (beta 0.9, 0.999) on 32768 elements whose gradient scales spread over three decades inside each
256-element block; at step T/2 the gradients of every other element fall tenfold. Each candidate code keeps its
own quantized state (quantized after every step); errors against float32 state fed the same gradients.
Research code (numpy, nearest code by search): the library's code is src/kernels/quant8.h.
Usage: /usr/bin/python3 scripts/q8_codes_sim.py [steps] [name,...]   (4000 for the table; minutes)
  name,...: run only the candidates whose names contain one of these words (e.g. 'cheap,absmax').
"""
import numpy as np, sys
rng = np.random.default_rng(1)
B = 256
def dyn_map(signed):
    data=[]; mex=7; total=8
    nsb = total-1
    for i in range(mex):
        fi = int(2**(i+nsb-mex)+1 if signed else 2**(i+nsb-mex+1)+1)
        b = np.linspace(0.1,1,fi); means=(b[:-1]+b[1:])/2
        data += list(10**(-(mex-1)+i)*means)
        if signed: data += list(-10**(-(mex-1)+i)*means)
    data.append(0); data.append(1.0)
    return np.array(sorted(set(data)))
def fp_map(E, M, signed, top_one):
    # floating code, subnormals, values <= top
    vals=[0.0]
    emax = -1
    emin = emax - (2**E - 2)
    for e in range(emin, emax+1):
        for f in range(2**M): vals.append(2.0**e*(1+f/2**M))
    for f in range(1,2**M): vals.append(2.0**emin*f/2**M)
    v=np.array(sorted(set(vals)))
    if top_one: v = v / v.max()
    if signed: v = np.concatenate([-v[1:][::-1], v])
    return v
def lin_map(): return np.linspace(0,1,256)
def lin_signed_map(): return np.arange(-127,128)/127.0  # round(y * 127): bench/q8floor.c's cheap m code
def nosub_map(E, M, signed=False):
    # bench/q8floor.c's cheap codes: 2^e (1 + f/2^M) for e = -(2^E - 1) .. 0, no subnormals; unsigned (v):
    # no 0 either; signed (m): 0 and both signs
    v = np.array(sorted({2.0**e*(1+f/2**M) for e in range(-(2**E-1), 1) for f in range(2**M) if 2.0**e*(1+f/2**M) <= 1}))
    return np.concatenate([-v[::-1], [0.0], v]) if signed else v
def nearest(table, y):
    if table.min() > 0: y = np.maximum(y, table.min())  # a code without 0 rounds everything up to its least value
    i = np.clip(np.searchsorted(table, y), 1, len(table)-1)
    lo, hi = table[i-1], table[i]
    return np.where(np.abs(y-lo) <= np.abs(hi-y), lo, hi)
def quant(x, table, scale_kind, nonzero):
    xb = x.reshape(-1,B)
    A = np.abs(xb).max(1, keepdims=True)
    if scale_kind=='abs': s = A/np.abs(table).max()
    else: s = 2.0**(np.floor(np.log2(np.where(A>0,A,1)))+1)  # y in [0,1)
    s = np.where(A>0, s, 1.0)
    y = (xb/s).astype(np.float32)
    q = nearest(table, y)
    if nonzero:
        tp = table[table>0].min()
        q = np.where((q==0)&(y>0), tp, q)
    return (q*s).astype(np.float32).reshape(-1)
N=256*128; T=int(sys.argv[1]) if len(sys.argv)>1 else 3000
scale = (10**rng.uniform(-3,0,N)).astype(np.float32)
mu = rng.normal(0,0.3,N).astype(np.float32)
cands = {
 'dyn (bnb map, absmax)': (dyn_map(True),'abs',dyn_map(False),'abs',False,False),
 'dyn, sqrt(v)':          (dyn_map(True),'abs',dyn_map(False),'abs',False,True),
 'linear v (zero point)': (dyn_map(True),'abs',lin_map(),'abs',False,False),
 'linear v, never 0':     (dyn_map(True),'abs',lin_map(),'abs',True,False),
 'E4M3 / E5M3, absmax':   (fp_map(4,3,True,True),'abs',fp_map(5,3,False,True),'abs',True,False),
 'E4M3 / E5M3, pow2':     (fp_map(4,3,True,False),'p2',fp_map(5,3,False,False),'p2',True,False),
 'E4M3 / E4M4 sqrt, pow2':(fp_map(4,3,True,False),'p2',fp_map(4,4,False,False),'p2',True,True),
 'cheap: linear m / E5M3 no-sub v, absmax': (lin_signed_map(),'abs',nosub_map(5,3),'abs',True,False),
 'cheap: E4M3 / E5M3 no-sub, absmax': (nosub_map(4,3,True),'abs',nosub_map(5,3),'abs',True,False),
}
if len(sys.argv) > 2:
    words = sys.argv[2].split(',')
    cands = {k: c for k, c in cands.items() if any(w in k for w in words)}
b1,b2,eps,lr=0.9,0.999,1e-8,1e-3
st = {k:[np.zeros(N,np.float32),np.zeros(N,np.float32)] for k in cands}
m=np.zeros(N,np.float32); v=np.zeros(N,np.float32)
rep = {k:[] for k in cands}
chk = [10,100,1000,T//2,T]
for t in range(1,T+1):
    # half the elements' gradients fall 10x at T/2 (decay of v must follow)
    sc = np.where((np.arange(N)%2==0)&(t>T//2), scale*0.1, scale).astype(np.float32)
    g = (sc*(mu + rng.standard_normal(N).astype(np.float32))).astype(np.float32)
    m = (b1*m + (1-b1)*g).astype(np.float32); v=(b2*v+(1-b2)*g*g).astype(np.float32)
    bc1=1-b1**t; bc2=1-b2**t
    u = (m/bc1)/(np.sqrt(v/bc2)+eps)
    for k,(tm,km,tv,kv,nz,sq) in cands.items():
        mq,vq = st[k]
        mq = (b1*mq+(1-b1)*g).astype(np.float32); vq=(b2*vq+(1-b2)*g*g).astype(np.float32)
        uq = (mq/bc1)/(np.sqrt(vq/bc2)+eps)
        mq = quant(mq, tm, km, False)
        if sq: vq = quant(np.sqrt(vq), tv, kv, nz)**2
        else: vq = quant(vq, tv, kv, nz)
        st[k]=[mq,vq]
        if t in chk:
            em = np.sqrt(np.mean(((mq-m)/scale)**2))/np.sqrt(np.mean((m/scale)**2))
            ev = np.median(np.abs(vq-v)/v)
            eu = np.sqrt(np.mean((uq-u)**2))/np.sqrt(np.mean(u**2))
            eumax = np.max(np.abs(uq-u))/np.sqrt(np.mean(u**2))
            rep[k].append((t,em,ev,eu,eumax))
for k in cands:
    print(k)
    for r in rep[k]: print('  t=%5d  m rel rms %.4f  v median rel %.4f  update rel rms %.4f  max %.2f'%r)
