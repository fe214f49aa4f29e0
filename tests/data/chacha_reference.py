"""Independent reference for mpsnn's data order and augmentation draws.

Re-implements, from their documentation alone, `mpsnn::data::epoch_permutation` and
`mpsnn::data::augment_params`: ChaCha8 (RFC 8439 block function with 8 rounds, 64-bit block
counter in words 12-13, stream 0, as rand_chacha lays it out) keyed by four little-endian u64
`[domain tag, seed, epoch, index]`; a u64 draw is two consecutive output words, low first; a
uniform integer below n is (draw * n) >> 64. tests/data_loader.rs pins the values this prints.
Run: python3 tests/data/chacha_reference.py
"""
import struct

M=0xffffffff
def rotl(v,c): return ((v<<c)&M)|(v>>(32-c))
def qr(s,a,b,c,d):
    s[a]=(s[a]+s[b])&M; s[d]=rotl(s[d]^s[a],16)
    s[c]=(s[c]+s[d])&M; s[b]=rotl(s[b]^s[c],12)
    s[a]=(s[a]+s[b])&M; s[d]=rotl(s[d]^s[a],8)
    s[c]=(s[c]+s[d])&M; s[b]=rotl(s[b]^s[c],7)
def block(key,counter,rounds=8):
    const=[0x61707865,0x3320646e,0x79622d32,0x6b206574]
    k=list(struct.unpack('<8I',key))
    st=const+k+[counter&M,counter>>32,0,0]
    s=st[:]
    for _ in range(rounds//2):
        qr(s,0,4,8,12);qr(s,1,5,9,13);qr(s,2,6,10,14);qr(s,3,7,11,15)
        qr(s,0,5,10,15);qr(s,1,6,11,12);qr(s,2,7,8,13);qr(s,3,4,9,14)
    return [(s[i]+st[i])&M for i in range(16)]
class Rng:
    def __init__(s,key): s.key=key; s.ctr=0; s.buf=[]
    def u32(s):
        if not s.buf: s.buf=block(s.key,s.ctr); s.ctr+=1
        return s.buf.pop(0)
    def u64(s):
        lo=s.u32(); hi=s.u32(); return lo|(hi<<32)
def key(*v): return b''.join(struct.pack('<Q',x) for x in v)
PERM=0x6d70_736e_6e2d_7065; AUG=0x6d70_736e_6e2d_6175
def perm(n,seed,epoch):
    r=Rng(key(PERM,seed,epoch,0)); p=list(range(n))
    for i in range(n-1,0,-1):
        j=(r.u64()*(i+1))>>64; p[i],p[j]=p[j],p[i]
    return p
def aug(seed,epoch,idx):
    r=Rng(key(AUG,seed,epoch,idx))
    return ((r.u64()*9)>>64,(r.u64()*9)>>64,(r.u64()*2)>>64==1)
if __name__ == "__main__":
    print("epoch_permutation(10, 0, 0) =", perm(10, 0, 0))
    print("epoch_permutation(10, 1234, 5) =", perm(10, 1234, 5))
    print("augment_params(99, 3, 0..4) =", [aug(99, 3, i) for i in range(4)])
