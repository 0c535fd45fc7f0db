// Prints one plain closing line ("jest: N passed, N failed, N skipped") and, when
// IPC_CKPT_TEST_TALLY names a file, appends the counts to it so .ci/run can add up several runs.
const fs = require('node:fs');

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const passed = results.numPassedTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const skipped = results.numPendingTests + results.numTodoTests;
    process.stdout.write(`jest: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
    if (process.env.IPC_CKPT_TEST_TALLY) fs.appendFileSync(process.env.IPC_CKPT_TEST_TALLY, `${passed} ${failed} ${skipped}\n`);
  }
}

module.exports = SummaryReporter;
