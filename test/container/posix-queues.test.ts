// A POSIX message queue carried between two containers: the application in the first one creates and
// fills it, the host saves it with --freeze, restores it into a fresh container, and the application
// there receives the same messages in the same order (the first container still holds its own).
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { buildMqTool, MQ_TOOL_BINARY, patternHex } from '../support/mq-tool';
import { cli, runCli } from './cli';
import { Container, describeWithDocker, docker } from './docker';

const MQ_TOOL_IMAGE = 'ipc-ckpt-test/mq-tool:latest';
const repositoryRoot = path.resolve(__dirname, '..', '..');

jest.setTimeout(120_000);

/** The messages `send NAME PRIO SIZE SEED` made, as `receive` prints them, in delivery order. */
const SENT: Array<[number, number, number]> = [
  [1, 10, 1],
  [30000, 0, 2],
  [1, 64, 3],
  [7, 33, 4],
];
const EXPECTED = [...SENT]
  .map(([priority, size, seed], order) => ({ priority, size, seed, order }))
  .sort((a, b) => b.priority - a.priority || a.order - b.order)
  .map(({ priority, size, seed }) => `${priority} ${size} ${size === 0 ? '-' : patternHex(size, seed)}`)
  .join('\n');

describeWithDocker('a POSIX queue moved between two containers', () => {
  const containers: Container[] = [];
  let workdir = '';
  beforeAll(() => {
    buildMqTool();
    docker('build', '-q', '-t', MQ_TOOL_IMAGE, '-f', path.join(repositoryRoot, 'test/fixtures/mq-tool.Dockerfile'), path.dirname(MQ_TOOL_BINARY));
    workdir = path.join(path.dirname(MQ_TOOL_BINARY), `posix-container-${process.pid}`);
  }, 120_000);
  afterAll(() => {
    for (const container of containers) container.remove();
  });

  it('is received in the second container in the original order with the same bytes', () => {
    const source = Container.start(['--ipc=private', '--network=none'], MQ_TOOL_IMAGE, ['idle']);
    containers.push(source);
    const exec = (container: Container, ...args: string[]) => {
      const result = container.exec('/mq-tool', ...args);
      if (result.status !== 0) throw new Error(`mq-tool ${args.join(' ')} in ${container.name}: ${result.stderr}`);
      return result.stdout;
    };
    exec(source, 'create', 'app-queue', '10', '64', '640');
    for (const [priority, size, seed] of SENT) exec(source, 'send', 'app-queue', String(priority), String(size), String(seed));
    // Docker gives the container its own mqueue filesystem at /dev/mqueue, of its own IPC namespace.
    expect(docker('exec', source.name, '/mq-tool', 'attr', 'app-queue').trim()).toBe('10 64 4');

    const image = `${workdir}.img`;
    try {
      const saved = runCli('save', '--freeze', '-t', String(source.pid), '-o', image);
      expect(saved.stderr).toMatch(/1 POSIX queue\(s\) with 4 message\(s\)/);
      expect(saved.status).toBe(0);
      const target = Container.start(['--ipc=private', '--network=none'], MQ_TOOL_IMAGE, ['idle']);
      containers.push(target);
      expect(target.exec('/mq-tool', 'attr', 'app-queue').status).toBe(1);
      cli('restore', '--ns', target.nsPath, '-i', image);
      expect(cli('verify', '--ns', target.nsPath, '-i', image, '--quiescent')).toMatch(/^equal: 1 queue\(s\), 4 message\(s\)/);
      expect(exec(target, 'attr', 'app-queue').trim()).toBe('10 64 4');
      expect(exec(target, 'receive', 'app-queue').trim()).toBe(EXPECTED);
      expect(exec(source, 'receive', 'app-queue').trim()).toBe(EXPECTED);
    } finally {
      rmSync(image, { force: true });
    }
  });
});
