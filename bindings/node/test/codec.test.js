'use strict';
// Values that MessagePack cannot carry are refused, never sent as nil.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { pack, unpack } = require('../src/codec');
const { ParentWorker } = require('..');
const { WORKER } = require('./helpers');

describe('unsendable values', () => {
  it('a function argument is a TypeError naming where it is', () => {
    assert.throws(() => pack([1, () => 2]), {
      name: 'TypeError',
      message: 'cannot send a function (at [1]): MessagePack has no function type',
    });
  });

  it('a symbol deep inside is found too', () => {
    assert.throws(() => pack([{ a: [0, Symbol('s')] }]), {
      name: 'TypeError',
      message: 'cannot send a symbol (at [0].a[1]): MessagePack has no symbol type',
    });
  });

  it('ordinary values still pack as before', () => {
    const v = [1, 'two', { three: [3n, null, true] }, 2 ** 40];
    assert.deepEqual(unpack(pack(v)), [1, 'two', { three: [3, null, true] }, 2 ** 40]);
  });

  it('-0 is sent as the float64 -0.0, wherever it is', () => {
    const negativeZero = Buffer.from('cb8000000000000000', 'hex');
    assert.deepEqual(pack(-0), negativeZero);
    assert.deepEqual(pack([1, -0]), Buffer.concat([Buffer.from([0x92, 0x01]), negativeZero]));
    const back = unpack(pack({ list: [-0], zero: 0 }));
    assert.ok(Object.is(back.list[0], -0), `came back as ${back.list[0]}`);
    assert.ok(Object.is(back.zero, 0));
    assert.deepEqual(pack(0), Buffer.from([0x00])); // +0 stays the integer 0
  });

  describe('through a call', () => {
    const handle = ParentWorker.spawn(WORKER, 'node').handle();
    after(() => handle.stop());

    it('rejects with the TypeError and sends nothing', async () => {
      await handle.start();
      await assert.rejects(handle.call.echo(function cb() {}), {
        name: 'TypeError',
        message: 'cannot send a function (at [0]): MessagePack has no function type',
      });
      assert.equal(await handle.call.echo(5), 5); // the worker is still fine
    });

    it('-0 comes back from a Node worker as -0', async () => {
      await handle.start();
      const back = await handle.call.echo([-0, 0]);
      assert.ok(Object.is(back[0], -0), `came back as ${back[0]}`);
      assert.ok(Object.is(back[1], 0));
    });
  });
});
