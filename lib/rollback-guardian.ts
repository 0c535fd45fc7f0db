// A watcher process that undoes our changes to a namespace if this process dies before it is done
// (SIGKILL included): it puts raised sysctls back and removes the queues a restore created.
import { spawn, ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface, Interface } from 'node:readline';
import { IpcCkptError } from './errors';
import type { MsgSysctlName } from './native';
import type { ResolvedTarget } from './target';

// Reads "file VALUE PATH" / "fileas UID:GID VALUE PATH" / "queue ID KEY" / "queues N" + N bytes
// "ID KEY ID KEY ...\n" / "forget ID ..." registrations and acks each; "done" ends it quietly; EOF (we
// died) removes the queues and writes every registered file back, newest first (a fileas one with that
// euid/egid, via setpriv). A batch is read by head -c in one go (sh's read takes a byte per system call)
// and kept whole until EOF.
const GUARDIAN_SCRIPT = `
trap '' INT TERM HUP PIPE
files=''
queues=''
mqueues=''
batches=''
forgotten=' '
n=0
b=0
while read -r verb value rest; do
  case "$verb" in
    file) n=$((n+1)); eval "value_$n=\\$value; path_$n=\\$rest; as_$n="; files="$n $files" ;;
    fileas) n=$((n+1)); eval "as_$n=\\$value; value_$n=\\\${rest%% *}; path_$n=\\\${rest#* }"; files="$n $files" ;;
    queue) queues="$value $queues"; eval "key_$value=\\$rest" ;;
    queues) b=$((b+1)); chunk=$(head -c "$value"); eval "batch_$b=\\$chunk"; batches="$b $batches" ;;
    forget) forgotten="$forgotten$value $rest " ;;
    mqueue) mqueues="$value $mqueues" ;;
    forget-mqueue) kept=''; for m in $mqueues; do [ "$m" = "$value" ] || kept="$kept $m"; done; mqueues=$kept ;;
    done) exit 0 ;;
  esac
  echo ok
done
for b in $batches; do
  eval "set -- \\$batch_$b"
  while [ $# -ge 2 ]; do queues="$1 $queues"; eval "key_$1=\\$2"; shift 2; done
done
for id in $queues; do
  case "$forgotten" in *" $id "*) continue ;; esac
  eval "key=\\$key_$id"
  # Only the queue we made: same id and key (another process may have taken the id meanwhile).
  if ipcs -q | awk -v id="$id" -v key="$key" '$2 == id && $1 == key { found = 1 } END { exit !found }'; then
    ipcrm -q "$id" 2>/dev/null
  fi
done
# POSIX queues a restore created (names as octal escapes): unlinked through a private mqueue mount.
for octal in $mqueues; do
  unshare --mount sh -c 'mount -t mqueue none /tmp && rm -f -- "/tmp/$1"' sh "$(printf "$octal")" 2>/dev/null
done
for i in $files; do
  eval "as=\\$as_$i; value=\\$value_$i; path=\\$path_$i"
  if [ -n "$as" ]; then
    # tee, not sh: dash drops an euid that differs from the real uid.
    printf '%s\\n' "$value" | setpriv --keep-groups --egid="\${as#*:}" --euid="\${as%%:*}" tee "$path" >/dev/null
  else
    printf '%s\\n' "$value" > "$path"
  fi
done
exit 0
`;

/** The effective ids the guardian writes a file back with (default: its own, root's). */
export interface FileRestoreOptions {
  writeAsUid?: number;
  writeAsGid?: number;
}

/** A queue name as printf octal escapes: one shell word whatever bytes the name holds. */
function octalEscaped(name: string): string {
  return [...Buffer.from(name, 'utf8')].map((byte) => `\\${byte.toString(8).padStart(3, '0')}`).join('');
}

export class RollbackGuardian {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly acks: Interface;
  private readonly pending: Array<(line: string) => void> = [];
  private finished = false;

  private constructor(target: ResolvedTarget) {
    const command = target.nsPath === '' ? ['sh', '-c', GUARDIAN_SCRIPT] : ['nsenter', `--ipc=${target.nsPath}`, 'sh', '-c', GUARDIAN_SCRIPT];
    // Its own process group: a Ctrl-C or kill of our group must not take the guardian down with us.
    this.child = spawn(command[0], command.slice(1), { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    this.acks = createInterface({ input: this.child.stdout });
    this.acks.on('line', (line) => this.pending.shift()?.(line));
    this.child.on('exit', () => {
      for (const reply of this.pending.splice(0)) reply('exited');
    });
    this.child.on('error', () => {
      for (const reply of this.pending.splice(0)) reply('exited');
    });
  }

  static start(target: ResolvedTarget): RollbackGuardian {
    return new RollbackGuardian(target);
  }

  private async send(line: string): Promise<void> {
    if (this.finished) throw new IpcCkptError('E_INTERNAL', 'rollback guardian already finished');
    const reply = new Promise<string>((resolve) => this.pending.push(resolve));
    this.child.stdin.write(`${line}\n`);
    if ((await reply) !== 'ok') {
      throw new IpcCkptError('E_INTERNAL', 'the rollback guardian process did not start (nsenter and sh are needed)');
    }
  }

  /**
   * Call before changing a file such as a sysctl or a freezer state: the guardian writes the value back if we die,
   * with options.writeAsUid/writeAsGid as its effective ids when given (a user-namespaced target's limits need its root).
   */
  registerFileRestore(filePath: string, originalValue: string, options: FileRestoreOptions = {}): Promise<void> {
    if (/\s/.test(originalValue) || filePath.includes('\n')) throw new IpcCkptError('E_INTERNAL', `cannot guard ${filePath}`);
    const { writeAsUid, writeAsGid } = options;
    if (writeAsUid === undefined && writeAsGid === undefined) return this.send(`file ${originalValue} ${filePath}`);
    const uid = Math.trunc(writeAsUid ?? process.geteuid?.() ?? 0);
    const gid = Math.trunc(writeAsGid ?? process.getegid?.() ?? 0);
    return this.send(`fileas ${uid}:${gid} ${originalValue} ${filePath}`);
  }

  /** The guardian puts a sysctl of the namespace back if we die (as writeAsUid/writeAsGid when given). */
  registerSysctl(name: MsgSysctlName, originalValue: number, options: FileRestoreOptions = {}): Promise<void> {
    return this.registerFileRestore(`/proc/sys/kernel/${name}`, String(Math.trunc(originalValue)), options);
  }

  /** Call before a queue is created: if we die, the guardian removes the queue with this id and key. */
  registerQueue(id: number, key: number): Promise<void> {
    return this.send(`queue ${Math.trunc(id)} 0x${(key >>> 0).toString(16).padStart(8, '0')}`);
  }

  /** Call before a POSIX queue is created: if we die, the guardian unlinks the queue of this name. */
  registerPosixQueue(name: string): Promise<void> {
    return this.send(`mqueue ${octalEscaped(name)}`);
  }

  /** The POSIX queue was removed by us already (or never made). */
  forgetPosixQueue(name: string): Promise<void> {
    return this.send(`forget-mqueue ${octalEscaped(name)}`);
  }

  /** The queue was removed by us already. */
  forgetQueue(id: number): Promise<void> {
    return this.send(`forget ${Math.trunc(id)}`);
  }

  /** One line and one ack for a batch: call before the batch's msgget; call it for the next batch before awaiting this one's create. */
  registerQueues(queues: Array<{ id: number; key: number }>): Promise<void> {
    if (queues.length === 0) return Promise.resolve();
    const pairs = queues.map((q) => `${Math.trunc(q.id)} 0x${(q.key >>> 0).toString(16).padStart(8, '0')}`).join(' ');
    // send() ends the payload with its newline, which head -c takes too.
    return this.send(`queues ${pairs.length + 1}\n${pairs}`);
  }

  /** The queues were removed by us, or never made: the guardian must not touch them. */
  forgetQueues(ids: number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.send(`forget ${ids.map((id) => Math.trunc(id)).join(' ')}`);
  }

  /** Our own work is complete (or rolled back by us): the guardian exits without touching anything. */
  async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const exited = new Promise<void>((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) resolve();
      else this.child.once('exit', () => resolve());
    });
    this.child.stdin.end('done\n');
    await exited;
    this.acks.close();
  }
}
